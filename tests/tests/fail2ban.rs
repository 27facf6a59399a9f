//! The shipped fail2ban filter against the real server's log, both ways: what a real client
//! does routinely (one send to both addresses of a dual-stack server, a network duplicate, a
//! late copy, sends from IPv4 and IPv6) is matched by no line, while forged and garbage
//! datagrams and a withheld replay are, with their source address. Checked on the stderr
//! (logfmt) lines and on the same events as fail2ban reads them from the journal.
//!
//! Needs `fail2ban-regex` and fail2ban's `filter.d/common.conf`: without them the test is
//! skipped, unless `RUROCO_REQUIRE_FAIL2BAN=1` (set by scripts/test.sh), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ruroco_testkit::{line_has, plaintext, seal, wait_for};
use ruroco_tests::{Activation, Chain};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
/// fail2ban's shared definitions, which the filter includes.
const COMMON_CONF: &str = "/etc/fail2ban/filter.d/common.conf";
/// Summaries come once per reason per 10 s: wait for them well beyond that.
const SUMMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The filter in a directory next to fail2ban's common.conf, or `None` (skip) when fail2ban
/// is not installed and not required.
fn filter(dir: &Path) -> Option<PathBuf> {
    let have = Command::new("fail2ban-regex")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(COMMON_CONF).is_file();
    if !have {
        assert!(
            std::env::var("RUROCO_REQUIRE_FAIL2BAN").as_deref() != Ok("1"),
            "RUROCO_REQUIRE_FAIL2BAN=1 but fail2ban-regex or {COMMON_CONF} is missing: \
             apt-get install fail2ban"
        );
        eprintln!("SKIPPED: fail2ban-regex or {COMMON_CONF} missing (apt-get install fail2ban)");
        return None;
    }
    let d = dir.join("filter.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(COMMON_CONF, d.join("common.conf")).unwrap();
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/fail2ban/filter.d/ruroco.conf");
    let f = d.join("ruroco.conf");
    std::fs::copy(shipped, &f).unwrap();
    Some(f)
}

/// The addresses of the lines of `log` the filter matches (one per matched line).
fn matched(log: &Path, filter: &Path) -> Vec<IpAddr> {
    let o = Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(log)
        .arg(filter)
        .output()
        .expect("run fail2ban-regex");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "fail2ban-regex failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not an address: {l:?}"))
        })
        .collect()
}

/// How many lines of `log` had their date read from the stderr lines' `ts=` (fail2ban
/// ignores a matched line without a date, outside `fail2ban-regex`).
fn ts_dates(log: &Path, filter: &Path) -> u64 {
    let o = Command::new("fail2ban-regex")
        .arg("-v")
        .arg(log)
        .arg(filter)
        .output()
        .expect("run fail2ban-regex");
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find(|l| l.contains("] ^ts="))
        .and_then(|l| l.split(['[', ']']).nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ts= date template in:\n{out}"))
}

/// The server's stderr log as it is now, and the same events the way fail2ban's systemd
/// backend reads them from the journal (`<host> <SYSLOG_IDENTIFIER>[<pid>]: <MESSAGE>`, the
/// MESSAGE being the event's message), in `journalctl -o short` form with a date.
fn snapshot(c: &Chain, from: usize, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let text = c.server_log().get(from..).unwrap_or_default().to_owned();
    let stderr = dir.join(format!("{name}.stderr.log"));
    std::fs::write(&stderr, &text).unwrap();
    let journal: String = text
        .lines()
        .filter_map(|l| {
            let at = l.find(" message=")? + " message=".len();
            let rest = &l[at..];
            let message = match rest.strip_prefix('"') {
                Some(q) => &q[..q.find('"')?],
                None => rest.split(' ').next()?,
            };
            Some(format!(
                "Nov 30 12:00:00 host ruroco-server[42]: {message}\n"
            ))
        })
        .collect();
    let journal_path = dir.join(format!("{name}.journal.log"));
    std::fs::write(&journal_path, journal).unwrap();
    (stderr, journal_path)
}

/// The sum of `count=` over the summary lines of `event` and `reason` from `src`.
fn summarised(log: &str, event: &str, reason: &str, src: IpAddr) -> u64 {
    log.lines()
        .filter(|l| {
            line_has(l, &format!("event={event}"))
                && line_has(l, &format!("reason={reason}"))
                && line_has(l, &format!("src_ip={src}"))
        })
        .filter_map(|l| {
            l.split(' ')
                .rev()
                .find_map(|p| p.strip_prefix("count="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn the_filter_counts_forged_datagrams_and_never_a_real_clients_copies() {
    let dir = tempfile::tempdir().unwrap();
    let Some(filter) = filter(dir.path()) else {
        return;
    };
    let mut c = Chain::builder()
        .ips(&["127.0.0.1", "::1"])
        .activation(Activation::Socket(vec!["[::]".to_owned()]))
        .start();
    let k = c.key("k1");
    // The harness wakes socket activation with an empty datagram (a `bad_length`): leave
    // its summary out of what is checked.
    let pokes = c.kicks;
    let from = wait_for("the start-up summaries", SUMMARY_WAIT, || {
        let log = c.server_log();
        let logged: u64 = [LO4, LO6]
            .iter()
            .map(|ip| summarised(&log, "rejected", "bad_length", *ip))
            .sum();
        (logged == pokes).then_some(log.len())
    });

    // --- what a real client does -------------------------------------------------------
    // Five sends to both addresses, one counter each (more than the jail's maxretry of 3).
    const SENDS: u64 = 5;
    let mut held_back = None;
    for i in 0..SENDS {
        let mut pt = plaintext("hello", LO4);
        let v4 = seal(&k, &pt);
        pt.dst_ip = Some(LO6);
        let v6 = seal(&k, &pt);
        c.send_raw(LO4, &v4);
        if i == 0 {
            // The IPv6 copy of the first send arrives after the second send: a late copy.
            held_back = Some(v6);
            continue;
        }
        c.send_raw(LO6, &v6);
        if i == 1 {
            c.send_raw(LO6, &held_back.take().unwrap());
        }
        // A network duplicate of the IPv4 copy.
        c.send_raw(LO4, &v4);
    }
    // And the real client, once over each family.
    c.client_send(&c.addr4().to_string(), "k1", &["-c", "hello"]);
    c.client_send(&c.addr6().to_string(), "k1", &["-c", "hello"]);
    let copies = SENDS + (SENDS - 1);
    c.expect_status(
        &[
            ("received", SENDS * 2 + (SENDS - 1) + 2),
            ("accepted", SENDS + 2),
            ("forwarded", SENDS + 2),
            ("duplicate", copies),
        ],
        &["delivered", "bad_length"],
    );
    wait_for("the duplicate summaries", SUMMARY_WAIT, || {
        let log = c.server_log();
        (summarised(&log, "duplicate", "duplicate", LO4)
            + summarised(&log, "duplicate", "duplicate", LO6)
            == copies)
            .then_some(())
    });
    let (stderr, journal) = snapshot(&c, from, dir.path(), "legitimate");
    assert_eq!(
        matched(&stderr, &filter),
        Vec::<IpAddr>::new(),
        "the filter counts a real client's traffic:\n{}",
        std::fs::read_to_string(&stderr).unwrap()
    );
    assert_eq!(
        matched(&journal, &filter),
        Vec::<IpAddr>::new(),
        "the filter counts a real client's traffic (journal form):\n{}",
        std::fs::read_to_string(&journal).unwrap()
    );

    // --- forged and garbage, each from its own address --------------------------------------
    let bad_tag_src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let unknown_src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8));
    let length_src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let replay_src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
    let withheld = seal(&k, &plaintext("hello", LO4));
    c.send_raw(LO4, &seal(&k, &plaintext("hello", LO4)));
    let mut forged = seal(&k, &plaintext("hello", LO4));
    forged[40] ^= 1;
    c.send_raw(bad_tag_src, &forged);
    c.send_raw(LO6, &forged);
    let mut unknown = forged;
    unknown[..8].copy_from_slice(&[0x55; 8]);
    c.send_raw(unknown_src, &unknown);
    c.send_raw(length_src, &[1, 2, 3]);
    c.send_raw(replay_src, &withheld);
    let hostile: BTreeSet<IpAddr> = [bad_tag_src, LO6, unknown_src, length_src, replay_src].into();
    wait_for("the rejection summaries", SUMMARY_WAIT, || {
        let log = c.server_log();
        [
            ("bad_tag", bad_tag_src),
            ("bad_tag", LO6),
            ("unknown_key", unknown_src),
            ("bad_length", length_src),
            ("replay", replay_src),
        ]
        .iter()
        .all(|(reason, src)| summarised(&log, "rejected", reason, *src) == 1)
        .then_some(())
    });
    let (stderr, journal) = snapshot(&c, from, dir.path(), "forged");
    let lines = std::fs::read_to_string(&stderr).unwrap().lines().count() as u64;
    assert_eq!(
        ts_dates(&stderr, &filter),
        lines,
        "every stderr line has its date read"
    );
    for (form, path) in [("stderr", &stderr), ("journal", &journal)] {
        let got = matched(path, &filter);
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            hostile,
            "{form}: matched {got:?} in\n{}",
            std::fs::read_to_string(path).unwrap()
        );
        assert_eq!(got.len(), hostile.len(), "{form}: one line each: {got:?}");
    }
    c.assert_alive();
}
