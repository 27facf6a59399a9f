//! The one test kit of ruroco: the helpers that the daemons' black-box tests, the client's
//! tests, the end-to-end tests and the benchmark share (waiting with a deadline, clocks and
//! sealed datagrams, logfmt lines, `/proc` readers, files and ports, a spawned daemon with its
//! own notify socket, a stub commander). It must never touch anything outside the temp dirs
//! and processes its callers hand it, and never synchronise by sleeping a fixed time.
//!
//! Feature `aead` adds the hand-made datagrams (`plaintext`, `seal`; they need the cipher).
//! Everything is re-exported at the crate root, so `use ruroco_testkit::{Daemon, wait_for}`
//! works whatever module an item lives in.
// A harness failure is a test failure: panicking with a clear message is the intended way out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod clock;
pub mod daemon;
#[cfg(any(feature = "aead", test))]
pub mod datagram;
pub mod fs;
pub mod logfmt;
pub mod net;
pub mod procfs;
pub mod stub;
pub mod wait;

pub use clock::{fresh_counter, now_ns};
pub use daemon::{Daemon, Notify, as_nobody};
#[cfg(any(feature = "aead", test))]
pub use datagram::{plaintext, seal};
pub use fs::{
    append_line, chmod, chown_to, copy_for_nobody, gid_of, link_or_copy, temp_dir, toml_string,
    uid_of, write_file,
};
pub use logfmt::{events, line_has, log_has, parse_status};
pub use net::{free_tcp_port, free_udp_port, send_from, unspecified_like};
pub use procfs::{kb_field, members_of_group, proc_status, udp_queue};
pub use stub::StubCommander;
pub use wait::{DEADLINE, POLL, wait_for, wait_until};
