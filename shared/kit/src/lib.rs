//! The ruroco daemon kit: what the binaries need from the operating system and nothing of
//! the protocol's decisions. Atomic durable files, the trusted-path rules, peer credentials
//! (SO_PEERCRED), sd_notify, inherited descriptors, logging, human durations, key files, the
//! man-page shapes, exit codes (sysexits.h) and the one config error type.
//! It must never decide whether a datagram or frame is accepted: that is `ruroco-proto`.
#![forbid(unsafe_code)]

pub mod config_error;
pub mod duration;
pub mod exit;
#[cfg(feature = "daemon")]
pub mod fds;
pub mod fsutil;
#[cfg(feature = "keys")]
pub mod key_file;
#[cfg(feature = "daemon")]
pub mod logging;
pub mod manual;
#[cfg(feature = "daemon")]
pub mod notify;
pub mod peer;
#[cfg(feature = "daemon")]
pub mod trust;
