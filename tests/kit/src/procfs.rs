//! Readers of `/proc` (proc(5)): a process's status fields, the receive queue and drops of a
//! UDP port, the members of a process group. They must never fail a test on their own: a
//! file that cannot be read reads as empty.

use std::collections::BTreeMap;
use std::fs;

/// `/proc/PID/status` as a map of field -> value text (trimmed); empty when the process is
/// gone.
pub fn proc_status(pid: u32) -> BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// A `VmHWM`-style "1234 kB" value in bytes (0 when it is not a number).
pub fn kb_field(v: &str) -> u64 {
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The socket inodes process `pid` holds (the targets `socket:[N]` of `/proc/PID/fd/*`).
fn socket_inodes(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let target = fs::read_link(e.path()).ok()?;
                    let t = target.to_str()?;
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(rx_queue bytes, drops)` summed over the UDP sockets bound to local `port`
/// (`/proc/net/udp` and `udp6`), or `None` when no such socket exists. With `pid`, only the
/// sockets that process holds count (another process may use the same port on another
/// address).
pub fn udp_queue(port: u16, pid: Option<u32>) -> Option<(u64, u64)> {
    let inodes = pid.map(socket_inodes);
    let mut found = None;
    let want = format!(":{port:04X}");
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 13 || !f[1].ends_with(&want) {
                continue;
            }
            if let Some(inodes) = &inodes {
                if !inodes.iter().any(|i| i == f[9]) {
                    continue;
                }
            }
            let rx = f[4]
                .split_once(':')
                .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
                .unwrap_or(0);
            let drops: u64 = f[f.len() - 1].parse().unwrap_or(0);
            let (r, d) = found.unwrap_or((0, 0));
            found = Some((r + rx, d + drops));
        }
    }
    found
}

/// Process ids whose process group is `pgid`, zombies left out (from `/proc/*/stat`).
pub fn members_of_group(pgid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && f.first() != Some(&"Z") {
            v.push(pid);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn kb_fields_become_bytes() {
        assert_eq!(kb_field("1234 kB"), 1234 * 1024);
        assert_eq!(kb_field(" 7 kB"), 7 * 1024);
        assert_eq!(kb_field("kB"), 0);
    }

    #[test]
    fn this_process_has_a_status_and_its_socket_a_queue() {
        let me = std::process::id();
        assert_eq!(proc_status(me)["Pid"], me.to_string());
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(&[0u8; 10], ("127.0.0.1", port))
            .unwrap();
        let (rx, drops) = udp_queue(port, Some(me)).expect("our own socket");
        assert!(rx > 0, "the queued datagram counts");
        assert_eq!(drops, 0);
        // Another process holds no socket on it.
        assert_eq!(udp_queue(port, Some(1)), None);
    }

    #[test]
    fn this_process_is_in_its_own_group() {
        let pgid = nix::unistd::getpgrp().as_raw();
        assert!(members_of_group(pgid).contains(&(std::process::id() as i32)));
    }
}
