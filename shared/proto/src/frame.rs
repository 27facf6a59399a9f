//! The 24-byte commander frame `cmd_hash (u64 BE) || ip (16)`, server → commander, and the
//! 9-byte acknowledgement `seq (u64 BE) || outcome (1)`, commander → server.
//! Fixed size both ways: the commander never parses anything but frames, the server nothing
//! but acknowledgements. See docs/protocol.md, "Commander frame" and "Acknowledgement".

use std::net::IpAddr;

use crate::ids::CmdHash;
use crate::ip;

/// Exact size of one frame on the commander socket.
pub const FRAME_LEN: usize = 24;

/// One request to the commander: run `cmd` for `ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The command's hash (bytes 0–7, big-endian).
    pub cmd: CmdHash,
    /// The address the command acts for (bytes 8–23, `ip::encode`); canonical after decoding.
    pub ip: IpAddr,
}

/// Why 24 bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The address field is all zeros.
    #[error("frame carries no IP address (all zeros)")]
    NoIp,
    /// Unspecified, broadcast or multicast (`ip::can_be_client`).
    #[error("frame carries {0}, which cannot be a client's address")]
    NotAClient(IpAddr),
}

impl Frame {
    /// The 24 wire bytes.
    pub fn to_bytes(&self) -> [u8; FRAME_LEN] {
        let mut b = [0u8; FRAME_LEN];
        b[..8].copy_from_slice(&self.cmd.to_bytes());
        b[8..].copy_from_slice(&ip::encode(Some(self.ip)));
        b
    }

    /// Parse 24 wire bytes; the address must be one a client can have.
    pub fn from_bytes(b: &[u8; FRAME_LEN]) -> Result<Self, FrameError> {
        let mut cmd = [0u8; 8];
        cmd.copy_from_slice(&b[..8]);
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&b[8..]);
        let ip = ip::decode(addr).ok_or(FrameError::NoIp)?;
        if !ip::can_be_client(ip) {
            return Err(FrameError::NotAClient(ip));
        }
        Ok(Self {
            cmd: CmdHash(u64::from_be_bytes(cmd)),
            ip,
        })
    }
}

/// Exact size of one acknowledgement on the commander socket.
pub const ACK_LEN: usize = 9;

/// What the commander did with a frame, sent back once it reached its final outcome: the
/// command finished (or its grant was extended), or the frame was refused. Until then the
/// server keeps the frame and sends it again on a new connection (docs/grants.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// The command ran and exited 0, or an active grant was extended without running it.
    Done = 0,
    /// The command ran and failed (non-zero exit, signal, timeout, spawn error).
    Failed = 1,
    /// No command in commander.toml has this hash.
    UnknownCommand = 2,
    /// Refused without running: the queue or a grant limit was full.
    Refused = 3,
    /// The frame could not be decoded (no IP address).
    Malformed = 4,
}

impl AckOutcome {
    /// The name used in logs and `STATUS=`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckOutcome::Done => "done",
            AckOutcome::Failed => "failed",
            AckOutcome::UnknownCommand => "unknown_command",
            AckOutcome::Refused => "refused",
            AckOutcome::Malformed => "malformed",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => AckOutcome::Done,
            1 => AckOutcome::Failed,
            2 => AckOutcome::UnknownCommand,
            3 => AckOutcome::Refused,
            4 => AckOutcome::Malformed,
            _ => return None,
        })
    }
}

/// One acknowledgement: the frame's sequence number on its connection (the first frame the
/// server writes on a connection is 0, the next 1, ...) and its outcome. Acknowledgements may
/// arrive in any order (a slow command does not hold up the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The acknowledged frame's sequence number on its connection (bytes 0–7, big-endian).
    pub seq: u64,
    /// What became of it (byte 8).
    pub outcome: AckOutcome,
}

/// An acknowledgement the server cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Byte 8 is not a known [`AckOutcome`].
    #[error("acknowledgement carries unknown outcome byte {0}")]
    UnknownOutcome(u8),
}

impl Ack {
    /// The 9 wire bytes.
    pub fn to_bytes(&self) -> [u8; ACK_LEN] {
        let mut b = [0u8; ACK_LEN];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8] = self.outcome as u8;
        b
    }

    /// Parse 9 wire bytes.
    pub fn from_bytes(b: &[u8; ACK_LEN]) -> Result<Self, AckError> {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[..8]);
        let outcome = AckOutcome::from_byte(b[8]).ok_or(AckError::UnknownOutcome(b[8]))?;
        Ok(Self {
            seq: u64::from_be_bytes(seq),
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_v4_and_v6() {
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let f = Frame {
                cmd: CmdHash::of_name("hello"),
                ip: ip.parse().unwrap_or(IpAddr::from([0u8; 4])),
            };
            assert_eq!(Frame::from_bytes(&f.to_bytes()), Ok(f));
        }
    }

    #[test]
    fn layout_is_hash_then_mapped_ip() {
        let f = Frame {
            cmd: CmdHash(0x0102030405060708),
            ip: IpAddr::from([192, 0, 2, 1]),
        };
        let b = f.to_bytes();
        assert_eq!(&b[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &b[8..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]
        );
    }

    #[test]
    fn zero_ip_rejected() {
        assert_eq!(Frame::from_bytes(&[0; FRAME_LEN]), Err(FrameError::NoIp));
    }

    #[test]
    fn addresses_that_cannot_be_a_client_are_rejected() {
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1"] {
            let ip: IpAddr = bad.parse().unwrap_or(IpAddr::from([1, 1, 1, 1]));
            let mut b = [0u8; FRAME_LEN];
            b[8..].copy_from_slice(&ip::encode(Some(ip)));
            assert_eq!(
                Frame::from_bytes(&b),
                Err(FrameError::NotAClient(ip)),
                "{bad}"
            );
        }
    }

    #[test]
    fn ack_layout_and_round_trip() {
        let a = Ack {
            seq: 0x0102030405060708,
            outcome: AckOutcome::UnknownCommand,
        };
        assert_eq!(a.to_bytes(), [1, 2, 3, 4, 5, 6, 7, 8, 2]);
        assert_eq!(Ack::from_bytes(&a.to_bytes()), Ok(a));
        let mut bad = a.to_bytes();
        bad[8] = 5;
        assert_eq!(Ack::from_bytes(&bad), Err(AckError::UnknownOutcome(5)));
    }

    proptest! {
        #[test]
        fn ack_never_panics_and_round_trips(b in proptest::array::uniform9(any::<u8>())) {
            if let Ok(a) = Ack::from_bytes(&b) {
                prop_assert_eq!(a.to_bytes(), b);
            }
        }

        #[test]
        fn never_panics_and_round_trips(b in proptest::array::uniform24(any::<u8>())) {
            if let Ok(f) = Frame::from_bytes(&b) {
                prop_assert_eq!(Frame::from_bytes(&f.to_bytes()), Ok(f));
            }
        }
    }
}
