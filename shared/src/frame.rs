//! The 24-byte commander frame `cmd_hash (u64 BE) || ip (16)`, server → commander.
//! Fixed size both ways: the commander never parses anything else.

use std::net::IpAddr;

use crate::ids::CmdHash;
use crate::ip;

/// Exact size of one frame on the commander socket.
pub const FRAME_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    pub cmd: CmdHash,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame carries no IP address (all zeros)")]
    NoIp,
}

impl Frame {
    pub fn to_bytes(&self) -> [u8; FRAME_LEN] {
        let mut b = [0u8; FRAME_LEN];
        b[..8].copy_from_slice(&self.cmd.to_bytes());
        b[8..].copy_from_slice(&ip::encode(Some(self.ip)));
        b
    }

    pub fn from_bytes(b: &[u8; FRAME_LEN]) -> Result<Self, FrameError> {
        let mut cmd = [0u8; 8];
        cmd.copy_from_slice(&b[..8]);
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&b[8..]);
        let ip = ip::decode(addr).ok_or(FrameError::NoIp)?;
        Ok(Self {
            cmd: CmdHash(u64::from_be_bytes(cmd)),
            ip,
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

    proptest! {
        #[test]
        fn never_panics_and_round_trips(b in proptest::array::uniform24(any::<u8>())) {
            if let Ok(f) = Frame::from_bytes(&b) {
                prop_assert_eq!(Frame::from_bytes(&f.to_bytes()), Ok(f));
            }
        }
    }
}
