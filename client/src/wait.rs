//! `--wait PORT`: after a send, connect to the server's addresses on a TCP port until one
//! answers or the timeout passes, asking for one more send at half-time. Only connects; never
//! writes to or reads from the connection (that is `connect.rs`'s job, if asked).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long `--wait` waits by default. The server runs the command within milliseconds of the
/// datagram; a few seconds cover a slow link and the one resend.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect-attempt timeouts, one per attempt to an address that timed out before: a SYN
/// dropped because the firewall had not opened yet is not retransmitted by the kernel for a
/// second, so the first attempts are short and a fresh SYN follows soon after the rule
/// appears; later attempts get the full second a slow link may need.
const ATTEMPT_TIMEOUTS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// The timeout of a connect attempt to an address after `timed_out` earlier attempts to it
/// timed out (refused attempts do not count: they say nothing about the link's speed).
pub fn attempt_timeout(timed_out: usize) -> Duration {
    ATTEMPT_TIMEOUTS
        .get(timed_out)
        .copied()
        .unwrap_or(ATTEMPT_TIMEOUTS[ATTEMPT_TIMEOUTS.len() - 1])
}
/// Pause between rounds of refused attempts, so a closed port is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The connection that answered.
#[derive(Debug)]
pub struct Answered {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub elapsed: Duration,
    /// Whether the half-time resend happened.
    #[allow(dead_code)] // Read by the tests, which prove when the resend happens.
    pub resent: bool,
}

/// Nothing answered before the deadline.
#[derive(Debug)]
pub struct NoAnswer {
    pub resent: bool,
    /// The last error of each address tried, in order.
    pub last_errors: Vec<(SocketAddr, io::Error)>,
}

/// The TCP addresses to try: each address of the send with the wait port, without duplicates.
pub fn tcp_addrs(udp: &[SocketAddr], port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in udp {
        let t = SocketAddr::new(a.ip(), port);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Try `addrs` in turn until one accepts a TCP connection or `timeout` passes; call `resend`
/// once when half of `timeout` has passed without an answer.
pub fn wait_for_port(
    addrs: &[SocketAddr],
    timeout: Duration,
    mut resend: impl FnMut(),
) -> Result<Answered, NoAnswer> {
    let start = Instant::now();
    let deadline = start + timeout;
    let half = start + timeout / 2;
    let mut resent = false;
    let mut last_errors: Vec<(SocketAddr, io::Error)> = Vec::new();
    // Per address, how many attempts timed out so far.
    let mut timeouts = vec![0usize; addrs.len()];
    loop {
        for (i, &addr) in addrs.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline || addrs.is_empty() {
                return Err(NoAnswer {
                    resent,
                    last_errors,
                });
            }
            if !resent && now >= half {
                resend();
                resent = true;
            }
            let now = Instant::now();
            let until = if resent { deadline } else { half };
            let n = timeouts.get(i).copied().unwrap_or(0);
            let budget = attempt_timeout(n)
                .min(until.saturating_duration_since(now))
                .max(Duration::from_millis(1));
            match TcpStream::connect_timeout(&addr, budget) {
                Ok(stream) => {
                    return Ok(Answered {
                        stream,
                        addr,
                        elapsed: start.elapsed(),
                        resent,
                    });
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        if let Some(t) = timeouts.get_mut(i) {
                            *t += 1;
                        }
                    }
                    last_errors.retain(|(a, _)| *a != addr);
                    last_errors.push((addr, e));
                }
            }
        }
        if addrs.is_empty() {
            return Err(NoAnswer {
                resent,
                last_errors,
            });
        }
        let now = Instant::now();
        let until = if resent { deadline } else { half };
        std::thread::sleep(RETRY_PAUSE.min(until.saturating_duration_since(now)));
    }
}

/// The one line printed when nothing answered: what was tried and what usually causes it.
pub fn no_answer_message(port: u16, timeout: Duration, n: &NoAnswer, command: &str) -> String {
    let tried = n
        .last_errors
        .iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let sends = if n.resent { "2 sends" } else { "1 send" };
    format!(
        "TCP port {port} did not answer within {:.1}s after {sends} ({tried}). Likely causes: a \
firewall drops the UDP datagram before the server; the server's `ips` lacks the address sent \
to; the server does not know this key (or its allow-list lacks the command); no command \
{command:?} is configured; the command did not open port {port}. The server's log names the \
reason: journalctl -u ruroco -u ruroco-commander",
        timeout.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn tcp_addrs_dedup_and_take_the_port() {
        let a: SocketAddr = "127.0.0.1:34020".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let c: SocketAddr = "[::1]:34020".parse().unwrap();
        assert_eq!(
            tcp_addrs(&[a, b, c], 22),
            vec![
                "127.0.0.1:22".parse::<SocketAddr>().unwrap(),
                "[::1]:22".parse().unwrap()
            ]
        );
    }

    #[test]
    fn attempts_start_short_and_grow_to_a_second() {
        // The kernel retransmits a dropped SYN after 1 s (TCP_TIMEOUT_INIT): the first attempts
        // must give up well before that so a fresh SYN goes out soon after the rule appears.
        let rto = Duration::from_secs(1);
        assert!(attempt_timeout(0) <= rto / 4, "{:?}", attempt_timeout(0));
        assert!(attempt_timeout(1) < rto);
        let all: Vec<Duration> = (0..6).map(attempt_timeout).collect();
        assert!(all.windows(2).all(|w| w[0] <= w[1]), "{all:?}");
        // A slow link still gets full one-second attempts.
        assert_eq!(attempt_timeout(2), rto);
        assert_eq!(attempt_timeout(100), rto);
    }

    #[test]
    fn answers_when_a_listener_is_there() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut resends = 0;
        let a = wait_for_port(&[addr], Duration::from_secs(20), || resends += 1).unwrap();
        assert_eq!(a.addr, addr);
        assert!(!a.resent);
        assert_eq!(resends, 0);
    }

    #[test]
    fn resends_once_and_gives_up_when_nothing_listens() {
        // A port that was just free: connecting is refused at once.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut resends = 0;
        let n = wait_for_port(&[addr], Duration::from_millis(400), || resends += 1).unwrap_err();
        assert_eq!(resends, 1);
        assert!(n.resent);
        assert_eq!(n.last_errors.len(), 1);
        let m = no_answer_message(22, Duration::from_millis(400), &n, "open_ssh");
        assert!(!m.contains('\n'));
        for needle in ["firewall", "ips", "key", "\"open_ssh\"", "2 sends"] {
            assert!(m.contains(needle), "{needle} not in {m}");
        }
    }

    #[test]
    fn the_resend_can_make_the_port_answer() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut listener = None;
        let a = wait_for_port(&[addr], Duration::from_secs(4), || {
            listener = TcpListener::bind(addr).ok();
        })
        .unwrap();
        assert!(listener.is_some(), "port taken meanwhile");
        assert!(a.resent);
    }
}
