//! The ruroco protocol core, sans-IO: wire types, the 24-byte commander frame and its
//! acknowledgement, key ids and command hashes, the 16-byte address encoding and, behind the
//! default `aead` feature, the 94-byte datagram, keys and the acceptance gate (SPEC §2).
//! It must never open a file or a socket, spawn a process, read a clock or hold global state:
//! bytes, addresses and times come in as arguments.
#![forbid(unsafe_code)]

pub mod frame;
#[cfg(feature = "aead")]
pub mod gate;
pub mod ids;
pub mod ip;
#[cfg(feature = "aead")]
pub mod key;
#[cfg(feature = "aead")]
pub mod protocol;
#[cfg(feature = "aead")]
mod rate_limit;

pub use frame::{ACK_LEN, Ack, AckOutcome, FRAME_LEN, Frame};
#[cfg(feature = "aead")]
pub use gate::{Accepted, Gate, Policy, Reject};
pub use ids::{CmdHash, KeyId};
#[cfg(feature = "aead")]
pub use key::{Key, KeyError};
#[cfg(feature = "aead")]
pub use protocol::{DATAGRAM_LEN, Plaintext};
