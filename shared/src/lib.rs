//! The one crate the ruroco binaries share: wire protocol, keys, commander frames, the
//! sans-IO acceptance decision, and small file / peer-credential helpers.
//! It must never open a network socket, spawn a process or hold global state.
#![forbid(unsafe_code)]

pub mod duration;
#[cfg(feature = "daemon")]
pub mod fds;
pub mod frame;
pub mod fsutil;
pub mod ids;
pub mod ip;
pub mod key;
#[cfg(feature = "daemon")]
pub mod logging;
pub mod manual;
#[cfg(feature = "daemon")]
pub mod notify;
pub mod peer;
pub mod protocol;
mod siv;
#[cfg(feature = "daemon")]
pub mod trust;
pub mod verdict;

pub use frame::{ACK_LEN, Ack, AckOutcome, FRAME_LEN, Frame};
pub use ids::{CmdHash, KeyId};
pub use key::{Key, KeyError};
pub use protocol::{DATAGRAM_LEN, Plaintext};
pub use verdict::{Accepted, Policy, Reject};
