//! Hand-made datagrams: a plaintext with a fresh counter and its sealed 94-byte datagram
//! (SPEC "Datagram"). It must never reuse a counter within one process.

use crate::clock::fresh_counter;
use ruroco_proto::protocol::{self, Plaintext};
use ruroco_proto::{CmdHash, DATAGRAM_LEN, Key};
use std::net::IpAddr;

/// A plaintext of the current protocol version for `cmd`, with a [`fresh_counter`], strict,
/// no source claimed, addressed to `dst`.
pub fn plaintext(cmd: &str, dst: IpAddr) -> Plaintext {
    Plaintext {
        version: protocol::VERSION,
        cmd: CmdHash::of_name(cmd),
        counter: fresh_counter(),
        strict: true,
        src_ip: None,
        dst_ip: Some(dst),
    }
}

/// `pt` sealed with `key` under a random nonce: one whole datagram.
///
/// # Panics
/// When the OS random generator fails.
pub fn seal(key: &Key, pt: &Plaintext) -> [u8; DATAGRAM_LEN] {
    protocol::seal_random(key, pt).expect("OS random generator")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_sealed_plaintext_opens_to_itself() {
        let key = Key::generate().unwrap();
        let pt = plaintext("hello", IpAddr::V4(Ipv4Addr::LOCALHOST));
        let d = seal(&key, &pt);
        assert_eq!(protocol::open(&key, &d).unwrap(), pt);
        assert_eq!(pt.cmd, CmdHash::of_name("hello"));
    }
}
