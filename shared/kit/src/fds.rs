//! Descriptors inherited from whoever started a daemon: everything above stderr is closed at
//! start but the one socket systemd passed (`LISTEN_FDS`, fd 3, sd_listen_fds(3)). A daemon
//! must not hand its parent's descriptors to a command, nor keep a socket it was not meant to
//! have (a second activated socket would escape the server's seccomp pin on its UDP socket).
//! It must never close a descriptor the daemon opened itself: call it first thing at start.

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: i32 = 3;

/// How many sockets systemd passed to this process (`LISTEN_FDS`, when `LISTEN_PID` is ours).
pub(crate) fn listen_fds() -> usize {
    let ours = std::process::id().to_string();
    match std::env::var("LISTEN_PID") {
        Ok(pid) if pid == ours => std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Close every descriptor above 2 except fd 3 when systemd passed at least one socket (the
/// daemons use exactly one and refuse to start with more). Returns the closed descriptors,
/// in /proc/self/fd order; none when /proc is not mounted (nothing is closed then). Never
/// fails: a descriptor that cannot be closed is left out of the list.
pub fn close_inherited() -> Vec<i32> {
    let keep = (listen_fds() > 0).then_some(LISTEN_FDS_START);
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && Some(*fd) != keep)
        .collect();
    // The directory's own descriptor was among them and is closed now: closing it again
    // fails with EBADF, and nothing else runs in between to reuse the number.
    fds.into_iter()
        .filter(|fd| nix::unistd::close(*fd).is_ok())
        .collect()
}
