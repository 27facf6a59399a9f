//! The ruroco protocol core, sans-IO: wire types, the 24-byte commander frame and its
//! acknowledgement, key ids and command hashes, the 16-byte address encoding and, behind the
//! default `aead` feature, the 94-byte datagram, keys and the acceptance gate (SPEC §2).
//! It must never open a file or a socket, spawn a process, read a clock or hold global state:
//! bytes, addresses and times come in as arguments.
#![forbid(unsafe_code)]

pub mod frame;
pub mod ids;
pub mod ip;
#[cfg(feature = "aead")]
pub mod key;
#[cfg(feature = "aead")]
pub mod protocol;
#[cfg(feature = "aead")]
pub mod verdict;

pub use frame::{ACK_LEN, Ack, AckOutcome, FRAME_LEN, Frame};
pub use ids::{CmdHash, KeyId};
#[cfg(feature = "aead")]
pub use key::{Key, KeyError};
#[cfg(feature = "aead")]
pub use protocol::{DATAGRAM_LEN, Plaintext};
#[cfg(feature = "aead")]
pub use verdict::{Accepted, Policy, Reject};
